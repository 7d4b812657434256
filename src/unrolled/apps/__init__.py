"""Applications built on the library: each has its own module and registers its CLI subcommands."""
