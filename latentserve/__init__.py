"""The `latentserve` command: one entry point over the offline half (`training`) and the online half
(`service`), which never import each other."""
