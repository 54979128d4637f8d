// Package shop holds what the demo shop's services share: the data types of their APIs, the
// instance identity every response carries, and small HTTP helpers.
//
// Start with Identity: each service loads it from the environment (INSTANCE_ID) and installs
// Identify as middleware, so every response names the instance that served it in the X-Instance
// header. The gateway adds the instances of its upstream calls to X-Served-By, which is how the demo
// launcher measures the balancers' share without looking inside the processes.
package shop
