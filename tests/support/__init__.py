"""What the tests stand on, apart from the tests themselves: the real test host (user managers,
podman, quadlet: `testhost`; test host B, the trixie root: `trixiehost`; rootless users:
`rootless`; a SLURM cluster: `slurmhost`), a local registry, the media network (namespaces,
coturn: `medianet`) and the stack files the e2e tests apply (`stackfiles`)."""
