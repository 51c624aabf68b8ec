"""Networks and losses of the four model kinds (torch only, no I/O); the kind list is artifact.manifest.KINDS."""
