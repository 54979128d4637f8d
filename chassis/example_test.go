package chassis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

func Example() {
	// In production the environment is the process' own; here it is a map, so the example picks free
	// ports and does not drain.
	env := config.MapLookup(map[string]string{"PORT": "0", "ADMIN_PORT": "0", "HOST": "127.0.0.1", "DRAIN_DELAY": "0s"})

	var cfg struct {
		Greeting string `envconfig:"GREETING" default:"Hello" desc:"word used to greet"`
	}
	svc, err := chassis.New("greeter", chassis.WithConfig(&cfg), chassis.WithEnv(env),
		chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))
	if err != nil {
		chassis.Exit(err)
	}
	svc.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s, %s!", cfg.Greeting, r.PathValue("name"))
	})

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- svc.Run(ctx) }()
	<-svc.Ready()

	res, err := http.Get("http://" + svc.Addr() + "/hello/gopher")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, string(body))

	ready, _ := http.Get("http://" + svc.AdminAddr() + "/readyz")
	ready.Body.Close()
	fmt.Println("readyz", ready.StatusCode)

	stop() // like SIGTERM: drain, stop hooks, flush
	fmt.Println("run:", <-done)
	// Output:
	// 200 Hello, gopher!
	// readyz 200
	// run: <nil>
}

// An admin task: in a binary built on Main, `./greeter migrate 3` runs it the same way. The task has
// the service's configuration, and no port is opened.
func ExampleService_Task() {
	env := config.MapLookup(map[string]string{"GREETING": "Hi", "DRAIN_DELAY": "0s"})
	var cfg struct {
		Greeting string `envconfig:"GREETING" default:"Hello" desc:"word used to greet"`
	}
	svc, err := chassis.New("greeter", chassis.WithConfig(&cfg), chassis.WithEnv(env),
		chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))
	if err != nil {
		chassis.Exit(err)
	}
	svc.Task("migrate", "apply the schema migrations up to VERSION", func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return errors.New("usage: migrate VERSION")
		}
		fmt.Printf("%s: migrating to version %s\n", cfg.Greeting, args[0])
		return nil
	})
	for _, t := range svc.Tasks() {
		fmt.Printf("task %s: %s\n", t.Name, t.Description)
	}
	err = svc.RunTask(context.Background(), "migrate", []string{"3"})
	fmt.Println("task:", err, "no port:", svc.Addr() == "" && svc.AdminAddr() == "")
	// Output:
	// task migrate: apply the schema migrations up to VERSION
	// Hi: migrating to version 3
	// task: <nil> no port: true
}
