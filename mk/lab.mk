# The lab fleet: Debian 12 machines (systemd + sshd) in network namespaces on this host.
# `make lab-up [LAB_NODES=3]` boots control + web1..webN and writes inventory/lab/hosts.yml;
# `make lab-down` removes every machine, namespace, link, mount and cgroup it made.
LAB_NODES ?=
LAB_TOOL := /usr/bin/python3 lab/galaxy_lab.py

.PHONY: lab-up lab-down lab-status

lab-up: host-deps
	$(LAB_TOOL) up $(if $(LAB_NODES),--nodes $(LAB_NODES))

lab-down: host-deps
	$(LAB_TOOL) down

lab-status: host-deps
	$(LAB_TOOL) status
