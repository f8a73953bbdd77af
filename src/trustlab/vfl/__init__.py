"""HashVFL lab: hashed vertical federated learning, reconstruction and label-leakage attacks, detection.

Qiu et al., *HashVFL*, IEEE TIFS 19 (2024), arXiv 2212.00325. Heavy imports (torch, grpc) stay inside modules.
"""
