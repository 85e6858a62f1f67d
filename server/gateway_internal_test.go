package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// TestStreamMessageJSON checks that the REST stream envelope written
// directly holds the same JSON as the gateway's generic encoding, for text
// that encoding/json would escape differently.
func TestStreamMessageJSON(t *testing.T) {
	generic := jsonMarshaler()
	direct := rawBodyMarshaler{jsonMarshaler()}
	for name, resp := range map[string]*calsyncv1.WatchEventsResponse{
		"Change": {Kind: &calsyncv1.WatchEventsResponse_Change{Change: &calsyncv1.Change{
			Cursor: "c1", Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED,
			Event:         &calsyncv1.CalendarEvent{Id: "evt_1", Title: `<b>Q&A</b> "stand-up" ünïcode ✓` + "\u2028"},
			ChangedFields: []string{"title"},
		}}},
		"Bookmark": {Kind: &calsyncv1.WatchEventsResponse_Bookmark{Bookmark: &calsyncv1.Bookmark{Cursor: "c2", SnapshotComplete: true}}},
	} {
		t.Run(name, func(t *testing.T) {
			msg := map[string]any{"result": resp}
			want, err := generic.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := direct.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.ContainsRune(got, '\n') {
				t.Fatalf("%s spans lines; NDJSON needs one line per message", got)
			}
			sameJSON(t, got, want)
		})
	}
	t.Run("ErrorUnchanged", func(t *testing.T) {
		// A stream's final error is framed by the gateway as its own map type.
		msg := map[string]proto.Message{"error": status.New(codes.OutOfRange, "compacted").Proto()}
		want, _ := generic.Marshal(msg)
		got, err := direct.Marshal(msg)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %s, %v; want %s", got, err, want)
		}
	})
}

// TestIngestResponseJSON: a webhook's answer written directly holds what
// the gateway's generic encoding gives, and an id that would need escaping
// takes the generic path.
func TestIngestResponseJSON(t *testing.T) {
	generic := jsonMarshaler()
	direct := rawBodyMarshaler{jsonMarshaler()}
	for _, r := range []*calsyncv1.IngestWebhookResponse{
		{DeliveryId: "123", Duplicate: false}, {DeliveryId: "9223372036854775807", Duplicate: true},
		{}, {DeliveryId: `a"b\\c` + "\n "},
	} {
		want, err := generic.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := direct.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, got, want)
	}
	if _, ok := appendIngestResponse(nil, &calsyncv1.IngestWebhookResponse{DeliveryId: `a"b`}); ok {
		t.Fatal("an id that needs escaping was written directly")
	}
}

// TestWebhookRouteMatchesProto: the webhook route the server registers by
// hand is the one calsync.proto declares for IngestWebhook.
func TestWebhookRouteMatchesProto(t *testing.T) {
	m := calsyncv1.File_calsync_v1_calsync_proto.Services().ByName("WebhookService").Methods().ByName("IngestWebhook")
	rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
	if got := rule.GetPost(); got != webhookPath || rule.GetBody() != "body" {
		t.Fatalf("calsync.proto declares POST %q with body %q; the server serves POST %q with the body as the HttpBody", got, rule.GetBody(), webhookPath)
	}
}

// sameJSON fails t unless got and want are the same JSON value, whatever
// their spacing and the order of their members.
func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var gotV, wantV any
	if err := json.Unmarshal(got, &gotV); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if err := json.Unmarshal(want, &wantV); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotV, wantV) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

// answeringWebhooks answers every webhook with resp.
type answeringWebhooks struct {
	calsyncv1.UnimplementedWebhookServiceServer
	resp *calsyncv1.IngestWebhookResponse
}

func (a answeringWebhooks) IngestWebhook(context.Context, *calsyncv1.IngestWebhookRequest) (*calsyncv1.IngestWebhookResponse, error) {
	return a.resp, nil
}

// TestWebhookAnswerAsTheGatewayWritesIt: the webhook route writes its
// answer itself; status, headers and body are what the gateway's
// ForwardResponseMessage writes for the same answer, a request that asks
// for trailers included.
func TestWebhookAnswerAsTheGatewayWritesIt(t *testing.T) {
	conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, resp := range []*calsyncv1.IngestWebhookResponse{
		{DeliveryId: "42"}, {DeliveryId: "7", Duplicate: true}, {DeliveryId: `needs "escaping"`},
	} {
		mux, err := newGateway(t.Context(), conn, answeringWebhooks{resp: resp}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, te := range []string{"", "trailers"} {
			request := func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "/v1/webhooks/postpress", strings.NewReader(`{}`))
				if te != "" {
					r.Header.Set("TE", te)
				}
				return r
			}
			got := httptest.NewRecorder()
			mux.ServeHTTP(got, request())
			r := request()
			_, out := runtime.MarshalerForRequest(mux, r)
			want := httptest.NewRecorder()
			runtime.ForwardResponseMessage(r.Context(), mux, out, want, r, resp)
			if got.Code != want.Code || !reflect.DeepEqual(got.Header(), want.Header()) || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Fatalf("answer to %v (TE %q): %d %v %s; the gateway writes %d %v %s",
					resp, te, got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
			}
		}
	}
}
