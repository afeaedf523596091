"""Everything that touches Flower's internals: the version gate, the patch registry and the patches."""
