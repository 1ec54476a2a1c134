"""The cache node daemon: serves blocks from its memory and disk tiers and
fetches what it lacks from the bucket, once per block for all clients."""
