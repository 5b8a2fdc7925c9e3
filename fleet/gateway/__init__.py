"""The gateway: one OpenAI-compatible front door for the whole fleet, with team keys and usage.

Shipped into the gateway's own CPU image (with Starlette and httpx, never vLLM), so nothing here may import
another part of fleet except `fleet.gateway.*`, and this file imports nothing: `fleet --help` stays fast.

    config.py  the baked-in model list and the gateway's knobs (plain data)
    store.py   one small key-value interface, two backends: a named modal.Dict, a local JSON file
    keys.py    team keys: made once, stored hashed, checked through a short cache
    usage.py   per team x model x day counters, flushed to a store
    proxy.py   one upstream request: cold-start wait, keep-alives, SSE pass-through, usage capture
    app.py     the Starlette app that wires them
    render.py  (deploy side only) the gateway's Modal app, rendered from the catalog
"""
