"""In-process simulators of the Katana and BigCommerce APIs (real aiohttp servers)."""
