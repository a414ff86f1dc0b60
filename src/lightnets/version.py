"""lightnets' version: a module of its own, so that low modules (run directories, exported files'
metadata) can record it without importing the package's public facade."""

__version__ = "0.1.0"
