package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/ingest"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/store"
)

// stuckInbox is an inbox whose commits never finish, as on a stalled disk.
type stuckInbox struct{ store.Inbox }

func (stuckInbox) Enqueue(ctx context.Context, _ store.NewDelivery) (int64, bool, error) {
	<-ctx.Done()
	return 0, false, ctx.Err()
}

// The gateway calls the webhook service in process, past gRPC's deadline
// interceptor: the request limit must hold there too.
func TestInProcessWebhooksHaveADeadline(t *testing.T) {
	auth, err := postpress.NewAuthenticator("Postpress-Auth", []string{"secret"})
	if err != nil {
		t.Fatal(err)
	}
	svc := inProcessWebhooks{&webhookService{
		receiver: ingest.NewReceiver(stuckInbox{}, ingest.ReceiverConfig{Postpress: auth}),
		maxBytes: 1 << 20, timeout: 20 * time.Millisecond,
		log: slog.New(slog.DiscardHandler), metrics: metrics.New(),
	}}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("postpress-auth", "secret"))
	began := time.Now()
	_, err = svc.IngestWebhook(ctx, &calsyncv1.IngestWebhookRequest{Provider: "postpress", Body: nil})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DEADLINE_EXCEEDED", err)
	}
	if waited := time.Since(began); waited > 5*time.Second {
		t.Errorf("answered after %v", waited)
	}
}
