"""The per-request pipeline: one Falcon middleware class per stage, run in the request's greenlet."""
