"""echo: the smallest real Cairn service; proves the event -> store -> event path end to end."""
