"""State shared by the worker processes of one instance (`workers > 1`): one memory segment.

`segment.py` makes and maps it; `servers.py` keeps active connections and health per server;
`limits.py` keeps the per-client connection counts and the GCRA states of rate limits. With
`workers = 1` none of this exists and the objects that would use it keep their own state.
"""
