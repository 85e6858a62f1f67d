package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDeadlineInterceptor(t *testing.T) {
	slow := func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, status.Error(codes.Internal, "internal error") // what a careless handler might say
	}
	t.Run("ErrTooSlow", func(t *testing.T) {
		_, err := deadlineInterceptor(20*time.Millisecond)(context.Background(), nil, &grpc.UnaryServerInfo{}, slow)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err = %v, want DEADLINE_EXCEEDED", err)
		}
	})
	t.Run("ClientDeadlineWins", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		began := time.Now()
		deadlineInterceptor(time.Hour)(ctx, nil, &grpc.UnaryServerInfo{}, slow)
		if time.Since(began) > time.Second {
			t.Fatal("the server's limit overrode the client's shorter deadline")
		}
	})
	t.Run("OK", func(t *testing.T) {
		resp, err := deadlineInterceptor(time.Second)(context.Background(), nil, &grpc.UnaryServerInfo{},
			func(context.Context, any) (any, error) { return "ok", nil })
		if err != nil || resp != "ok" {
			t.Fatalf("= %v, %v", resp, err)
		}
	})
}

func TestTokens(t *testing.T) {
	tok := NewTokens([]string{"a-token", "", "b-token"})
	for _, c := range []struct {
		token string
		ok    bool
	}{{"a-token", true}, {"b-token", true}, {"", false}, {"a-toke", false}, {"a-tokenx", false}} {
		if got := tok.Valid(c.token); got != c.ok {
			t.Errorf("Valid(%q) = %v", c.token, got)
		}
	}
	tok.Set(nil)
	if tok.Valid("a-token") || tok.Len() != 0 {
		t.Error("an empty set accepts a token")
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "[::1]:9090": true, "localhost:1": true,
		":9090": false, "0.0.0.0:9090": false, "10.1.2.3:9090": false, "calsync.internal:9090": false, "nonsense": false,
	} {
		if got := LoopbackOnly(addr); got != want {
			t.Errorf("LoopbackOnly(%q) = %v", addr, got)
		}
	}
}
