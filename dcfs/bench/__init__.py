"""fio-style read tests over a directory — a dcfs mount, and optionally a
plain directory holding the same data as a baseline — run with fio when it
is installed and with a built-in Python reader otherwise."""
