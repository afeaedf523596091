"""Server-side aggregation rules, one class per rule; :mod:`strategies.registry` builds one by name."""
