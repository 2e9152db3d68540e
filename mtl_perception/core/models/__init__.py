"""Networks (student, teacher, task-transfer nets) and the registry that rebuilds them."""
