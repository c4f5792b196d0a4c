"""dojo's queue: the per-queue actor that owns jobs, leases, events and schedules."""
