"""The FUSE client: a read-only mount whose reads go memory tier -> disk
tier -> owner cache node -> bucket."""
