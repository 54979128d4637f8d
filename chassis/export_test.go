package chassis

import "net/http"

// AdminHandler returns the admin server's handler without serving it, for handler-level tests that
// set RemoteAddr to peers a test cannot connect from.
func (s *Service) AdminHandler() http.Handler { return s.newAdminServer().Handler }
