"""Declarative construct schemas, one module per binary format, with the kernel's field names."""
