"""The aiohttp edge: browser/HTTP frames <-> bus messages (arrives with the chat issue)."""
