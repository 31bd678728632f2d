# `make demo`: boot the lab (control, web1, web2), deploy Galaxy to it with
# ansible-playbook, send an order to each node through the order module (the
# shell executor: no LLM in the lab), print the answers and the health table.
# The lab stays up to play with; `make lab-down` removes it.
.PHONY: demo

demo: deps lab-up collection-link
	@echo "== deploy: playbooks/site.yml"
	$(GALAXY_ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/site.yml
	@echo "== an order to every node: playbooks/order.yml -e target=galaxy_nodes -e payload=uptime"
	$(GALAXY_ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/order.yml \
		-e target=galaxy_nodes -e payload=uptime -e executor=shell
	@echo "== health: playbooks/health.yml"
	$(GALAXY_ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/health.yml
	@echo
	@echo "The lab is still up. Try:"
	@echo "  export $(GALAXY_ANSIBLE_ENV)"
	@echo "  $(VENV)/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/order.yml -e target=web2 -e payload=df -e executor=shell"
	@echo "  python3 lab/galaxy_lab.py ssh web1 -- systemctl status galaxy-worker"
	@echo "Take it down with: make lab-down"
