"""Names of the tensors the modules pass between inference, generative and loss: scvi-tools'
module output keys (the names its getters read), as plain strings."""

Z_KEY, QZ_KEY, QL_KEY, PX_KEY, PL_KEY, LIBRARY_KEY = "z", "qz", "ql", "px", "pl", "library"
KL_Z_KEY, KL_L_KEY = "kl_divergence_z", "kl_divergence_l"
