"""Serving: runs as child processes, many users on one server. The run folder, the one truth every process
and page shares (`runs`); the fair queue that starts runs and keeps one spare worker warm (`jobs`); the process a
run trains in (`worker`); and shared mode's workspaces, settings and quotas (`shared`).
"""
