"""PNG and GIF drawing from numpy arrays; nothing here knows about models or HTTP."""
