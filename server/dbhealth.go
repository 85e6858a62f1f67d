package server

import (
	"context"
	"time"

	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/calsync/calsync/store"
)

// defaultDatabaseCheckInterval is how often a reachable-or-not database is
// pinged when Config.DatabaseCheckInterval is zero.
const defaultDatabaseCheckInterval = time.Second

// setServing sets the health status of the server and of every gRPC
// service it serves. After Shutdown began it changes nothing: the health
// server then ignores updates and stays NOT_SERVING.
func (s *Server) setServing(serving bool) {
	st := grpc_health_v1.HealthCheckResponse_NOT_SERVING
	if serving {
		st = grpc_health_v1.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, st)
	}
}

// checkDatabase pings the store, if it is a [store.Pinger], at once and
// then every DatabaseCheckInterval until shutdown, and reports the server
// NOT_SERVING (gRPC health and /healthz) while the database does not
// answer, SERVING again once it does, so that load balancers send traffic
// to replicas that can commit it. It logs each transition.
func (s *Server) checkDatabase() {
	pinger, ok := s.deps.Store.(store.Pinger)
	if !ok {
		return
	}
	every := s.cfg.DatabaseCheckInterval
	if every <= 0 {
		every = defaultDatabaseCheckInterval
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	serving := true
	for {
		// A ping that takes longer than the interval counts as a failure:
		// a database that slow cannot take webhooks either.
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := pinger.Ping(ctx)
		cancel()
		select {
		case <-s.stopping:
			return
		default:
		}
		if up := err == nil; up != serving {
			serving = up
			s.setServing(up)
			if up {
				s.log.Info("database reachable again: serving")
			} else {
				s.log.Error("database unreachable: not serving until it answers", "err", err)
			}
		}
		select {
		case <-s.stopping:
			return
		case <-ticker.C:
		}
	}
}
