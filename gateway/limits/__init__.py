"""Rate limits (Lua scripts run by Redis, an in-process limiter of the same shape when Redis fails),
token reservation and settlement, concurrency leases, and per-user usage quotas."""
