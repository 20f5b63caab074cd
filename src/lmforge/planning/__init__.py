"""Parameter, FLOPs, memory and time estimates."""
