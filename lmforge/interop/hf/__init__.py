"""interop/hf."""
