// Command chassis is the Chassis developer CLI.
//
//	chassis new [flags] <module-path> [dir]   generate a service repository
//	chassis env                               print the environment variables every service reads
//	chassis version                           print the CLI's version
//
// Start with `chassis new github.com/acme/orders`: it writes a ready repository (main.go on
// chassis.Main, a config struct, a handler and its chassistest test, README, Makefile, CI workflow,
// Dockerfile, Kubernetes manifests, .gitignore) into ./orders, refusing to overwrite files unless
// -force is given. With -grpc the service also serves a gRPC API on svc.GRPC(): a .proto, its
// generated Go code committed (the same for every module path, copied from templates/greeterpb),
// tests through a real connection, and `make proto`, which regenerates the code with only Go
// installed. Every command answers -h. Exit codes: 0 success, 1 failure, 2 usage error.
//
// The generated repository builds in its own CI and image as generated: -chassis-replace (develop
// against a local Chassis checkout) writes a go.work that .gitignore and .dockerignore exclude, never
// a replace directive, and go.mod requires the checkout's commit (its tag or pseudo-version). The
// Makefile's IMAGE, $(IMAGE_REPO):$(VERSION) with VERSION from git describe, is what `make docker`
// and CI build and what `make deploy` puts into deploy/kubernetes.yaml.
//
// Install it with
//
//	go install github.com/cloudchassis/kit/cmd/chassis@latest
package main
