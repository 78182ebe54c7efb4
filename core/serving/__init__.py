"""Serving: runs as child processes, many users on one server. The run folder, the one truth every process
and page shares (`runs`); the fair queue that decides what trains where (`jobs`); the processes it starts, one per
run and one spare kept warm (`processes`); the process a run trains in (`worker`); and shared mode's workspaces,
settings and quotas (`shared`).
"""
