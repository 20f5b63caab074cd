"""Model export/loading (io.py), Hugging Face maps (hf.py) and training state (state.py)."""
