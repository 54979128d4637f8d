package chassis_test

import "github.com/cloudchassis/kit/lifecycle"

type lifecycleHook = lifecycle.Hook
