"""Networks and losses of the four model kinds (torch only, no I/O)."""

KINDS = ("ae", "rae", "vae", "gan")
