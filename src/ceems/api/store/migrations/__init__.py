"""Numbered schema migrations `mNNNN_<what>.py`, each with `upgrade(conn)` and `downgrade(conn)`."""
