# The dashboard: `make test-dashboard` runs its tests (Flask test client, the real process, headless
# Chromium on a store a real local fleet filled; screenshots land in artifacts/dashboard/);
# `make bench-dashboard` runs wrk against /api/status and /healthz on a 20-node, 50k-order,
# 1M-event store and times the central audit query (figures and ratios printed).
.PHONY: test-dashboard bench-dashboard

test-dashboard: deps
	$(PY) -m pytest $(PYTEST_ARGS) tests/dashboard

bench-dashboard: deps
	$(PY) bench/bench_dashboard.py
