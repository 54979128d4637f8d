package chassis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/lifecycle"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// TaskFunc is the body of an admin task: a one-off process such as a database migration or a
// re-index (twelve-factor XII). ctx is cancelled by SIGINT or SIGTERM (and by RunTask's ctx); args
// are the command-line arguments after the task's name. The returned error decides the exit code
// (see Exit): nil exits 0, a *config.Error 2, an error with an ExitCode() int method that code, any
// other error 1.
type TaskFunc func(ctx context.Context, args []string) error

// ErrUnknownTask is returned (wrapped, with the list of tasks) by RunTask for a name no Task
// registered; Exit and Main exit with ExitConfig for it.
var ErrUnknownTask = errors.New("unknown task")

type task struct {
	name, description string
	fn                TaskFunc
}

// Task registers a one-off admin task that `<binary> NAME [ARGS...]` runs through Main (or RunTask
// directly), with the same configuration, logs, traces, metrics and clients as the service, but
// without serving: no public or admin port is opened, nothing is registered in discovery, and no
// OnStart, OnStop or OnDrain hook runs (they start serving-side work: workers, elections); a task
// opens what else it needs itself. -help lists the tasks with their descriptions, in the order
// registered. Call it before Run or RunTask, typically in Main's setup beside the routes, so that
// the task can close over the same clients:
//
//	catalog := svc.Client("catalog")
//	svc.Task("reindex", "rebuild the search index from the catalog", func(ctx context.Context, args []string) error {
//		return reindex(ctx, catalog, args)
//	})
//
// Like http.ServeMux.Handle, it panics on a programming error: an empty name, a name starting with
// "-" (it would be read as a flag), a name registered twice, or a nil fn.
func (s *Service) Task(name, description string, fn TaskFunc) {
	switch {
	case name == "" || strings.HasPrefix(name, "-") || strings.ContainsAny(name, " \t\n"):
		panic(fmt.Sprintf("chassis: Task: bad name %q (a word that does not start with -)", name))
	case fn == nil:
		panic(fmt.Sprintf("chassis: Task %q: nil function", name))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tasks {
		if t.name == name {
			panic(fmt.Sprintf("chassis: Task %q registered twice", name))
		}
	}
	s.tasks = append(s.tasks, task{name: name, description: description, fn: fn})
}

// TaskInfo names a registered task.
type TaskInfo struct{ Name, Description string }

// Tasks returns the registered tasks in the order registered.
func (s *Service) Tasks() []TaskInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TaskInfo, len(s.tasks))
	for i, t := range s.tasks {
		out[i] = TaskInfo{t.name, t.description}
	}
	return out
}

// RunTask runs the task registered under name with args, instead of Run: it checks the declared
// dependencies as Run does (a bad CLIENT_<NAME>_* variable is a *config.Error), starts the clients
// and their discovery, runs the task under a span named "task NAME", then stops the clients and
// flushes telemetry under SHUTDOWN_TIMEOUT. It opens no port and registers nothing. A task may also
// declare a client when it runs (svc.Client inside fn), for a dependency the serving service does
// not have; its settings are then checked at the first call instead (an error, exit code 1), and
// the warning about CLIENT_* and DISCOVERY_STATIC_* variables no declared client reads is not given. SIGINT or
// SIGTERM (unless WithoutSignals) cancels the task's ctx, and a second signal exits at once, as in
// Run. It returns the task's error; problems stopping the clients or flushing telemetry are logged,
// not returned, since the task's work is done. A task that does not return within SHUTDOWN_TIMEOUT
// of the cancellation makes RunTask return an error. An unknown name returns ErrUnknownTask with the
// list of tasks. A Service runs once: RunTask after Run or RunTask returns lifecycle.ErrAlreadyRun.
func (s *Service) RunTask(ctx context.Context, name string, args []string) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return lifecycle.ErrAlreadyRun
	}
	s.running, s.inTask = true, true
	t, found := s.findTask(name)
	err := s.runProblems()
	s.mu.Unlock()
	if !found {
		err = errors.Join(fmt.Errorf("%w %q: %s", ErrUnknownTask, name, s.taskList()), err)
	}
	if err != nil {
		s.release(ctx)
		return err
	}

	ctx, finished := context.WithCancel(ctx) // ends the group's wait once the task has returned
	defer finished()
	taskCtx, cancelTask := context.WithCancel(ctx)
	defer cancelTask()
	done := make(chan struct{})
	var taskErr error
	s.group.Append(lifecycle.Hook{Name: "telemetry", Stop: s.tel.Shutdown})
	s.group.Append(s.closers...)
	s.group.Append(
		lifecycle.Hook{Name: "clients", Start: s.startClients, Stop: s.stopClients},
		lifecycle.Hook{Name: "grpc clients", Start: s.startGRPCClients, Stop: s.stopGRPCClients},
		lifecycle.Hook{
			Name: "task " + name,
			Start: func(context.Context) error {
				go func() {
					defer close(done)
					defer finished()
					taskErr = s.runTask(taskCtx, t, args)
				}()
				return nil
			},
			Stop: func(stop context.Context) error {
				cancelTask() // a signal, or RunTask's ctx: the task returns early
				select {
				case <-done:
					return nil
				case <-stop.Done():
					return fmt.Errorf("task %q did not return within SHUTDOWN_TIMEOUT after its context was cancelled: %w", name, stop.Err())
				}
			},
		},
	)
	gerr := s.group.Run(ctx)
	_ = s.log.Sync()
	select {
	case <-done:
		if gerr != nil {
			s.log.Warn("task done; stopping the clients or flushing telemetry failed", zap.Error(gerr))
		}
		return taskErr
	default: // the start failed, or the task did not stop in time
		if gerr == nil {
			gerr = fmt.Errorf("task %q did not run", name)
		}
		return gerr
	}
}

// runTask runs t under a span and logs its start and end.
func (s *Service) runTask(ctx context.Context, t task, args []string) error {
	ctx, span := s.tel.Tracer(semconv.ScopeChassis).Start(ctx, "task "+t.name,
		trace.WithAttributes(attribute.String("chassis.task", t.name)))
	defer span.End()
	log := s.tel.For(ctx).With(zap.String("task", t.name))
	log.Info("task started", zap.Int("args", len(args)))
	began := time.Now()
	err := t.fn(ctx, args)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Error("task failed", zap.Duration("took", time.Since(began)), zap.Error(err))
	} else {
		log.Info("task done", zap.Duration("took", time.Since(began)))
	}
	return err
}

// findTask returns the task registered under name. Caller holds s.mu.
func (s *Service) findTask(name string) (task, bool) {
	for _, t := range s.tasks {
		if t.name == name {
			return t, true
		}
	}
	return task{}, false
}

// taskList describes the registered tasks for an error message.
func (s *Service) taskList() string {
	tasks := s.Tasks()
	if len(tasks) == 0 {
		return "this service has no tasks"
	}
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.Name
	}
	return "the tasks are " + strings.Join(names, ", ")
}

// writeTasks prints the Tasks section of -help.
func writeTasks(b *strings.Builder, name string, tasks []TaskInfo) {
	if len(tasks) == 0 {
		return
	}
	fmt.Fprintf(b, "Tasks (run %s TASK [ARGS...]: one-off, with this configuration, no port opened):\n", name)
	width := 0
	for _, t := range tasks {
		width = max(width, len(t.Name))
	}
	for _, t := range tasks {
		fmt.Fprintf(b, "  %-*s  %s\n", width, t.Name, t.Description)
	}
	b.WriteString("\n")
}
