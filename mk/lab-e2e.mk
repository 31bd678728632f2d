# End to end on the lab: opencode on the nodes, orders over the control node's
# routing key, the failure drills, and the detection benchmark.
#
#   make test-lab-e2e     tests/lab_e2e (a lab of its own, torn down after)
#   make bench-detect     kill -9 / network cut -> alert at control, and recovery
#
# Both need the lab's host packages and the opencode binary that the node role ships.

.PHONY: test-lab-e2e bench-detect

test-lab-e2e: deps host-deps opencode-tools
	$(PY) -m pytest $(PYTEST_ARGS) tests/lab_e2e

bench-detect: deps host-deps opencode-tools
	$(PY) bench/bench_detect.py
