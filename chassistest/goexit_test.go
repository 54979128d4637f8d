package chassistest_test

import "runtime"

func runtimeGoexit() { runtime.Goexit() }
