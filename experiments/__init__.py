"""Research probes: measurements that answered one question each about the losses and training (README.md)."""
