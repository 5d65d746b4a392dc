"""One loader per target: compose segments as that kernel's kexec_file loader does."""
