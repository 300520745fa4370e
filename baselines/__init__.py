"""fsarbench baselines (imported as ``fsarbench_baselines``): OTAM, Bi-MHM, TRX, HyRSM and a
ProtoNet/TSN mean baseline, each a plugin registered through the ``fsarbench.methods`` entry
point group exactly as a third-party method would be."""
