"""Infrastructure shared by the whole package, each piece in one place: atomic file writes
(:mod:`~senet.utils.atomic`), integrity digests (:mod:`~senet.utils.integrity`), finiteness
checks (:mod:`~senet.utils.finite`), folder locks (:mod:`~senet.utils.lock`), derived
seeds (:mod:`~senet.utils.seeding`) and the device choice (:mod:`~senet.utils.device`)."""
