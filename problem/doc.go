// Package problem writes HTTP error responses as RFC 9457 problem details
// (media type application/problem+json).
//
// Start with Write for the common case:
//
//	problem.Write(w, http.StatusRequestEntityTooLarge, "", "request body exceeds 1 MiB")
//
// and Details.Write when a response needs a type URI, an instance or a list of field errors.
//
// The package depends on the standard library only, so that every other package, including the
// ones that sit at the very edge of the request path, can use it.
package problem
