"""Reading and writing checkpoints: released weights into a module, training state for resume."""
