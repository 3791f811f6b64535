"""Domain rules as pure functions over immutable values: no I/O, no faust."""
