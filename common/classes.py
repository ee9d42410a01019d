"""The class every model has besides its species: ``no_birds``, always last.

One definition shared by the training side (datasets, distillation, export) and the device
side (edge/, which must not import the torch dataset modules).
"""

NO_BIRDS = "no_birds"
