// Command tasks is a test service with admin tasks and one dependency, for the task tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/cloudchassis/kit/chassis"
)

type config struct {
	Greeting string `envconfig:"GREETING" default:"hello" desc:"word used to greet"`
}

// exitCode is an error that carries its own exit code.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }
func (e exitCode) ExitCode() int { return int(e) }

func main() {
	var cfg config
	chassis.Main("tasks", func(svc *chassis.Service) error {
		svc.Client("pricing") // declared: its settings are checked before any task runs
		svc.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, cfg.Greeting) })
		svc.Task("greet", "print the greeting and the arguments", func(ctx context.Context, args []string) error {
			fmt.Println("greet:", cfg.Greeting, strings.Join(args, " "))
			return nil
		})
		svc.Task("fail", "fail with an error", func(context.Context, []string) error {
			return errors.New("the task failed on purpose")
		})
		svc.Task("exit3", "fail with exit code 3", func(context.Context, []string) error { return exitCode(3) })
		svc.Task("ports", "bind PORT and ADMIN_PORT itself: they must be free", func(context.Context, []string) error {
			for _, v := range []string{"PORT", "ADMIN_PORT"} {
				ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv(v))
				if err != nil {
					return fmt.Errorf("%s is taken while the task runs: %w", v, err)
				}
				ln.Close()
				fmt.Println("ports:", v, "free")
			}
			return nil
		})
		svc.Task("wait", "wait until cancelled by a signal", func(ctx context.Context, _ []string) error {
			fmt.Println("wait: waiting")
			<-ctx.Done()
			fmt.Println("wait: cancelled")
			return ctx.Err()
		})
		return nil
	}, chassis.WithConfig(&cfg))
}
