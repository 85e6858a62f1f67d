package ingest

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
)

func mustOpenStore(t testing.TB) store.Store {
	t.Helper()
	return testdb.MustOpen(t)
}

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// version is event "e1" as the provider describes it at minute n.
func version(n int, title string, deleted bool) *calsyncv1.CalendarEvent {
	return &calsyncv1.CalendarEvent{
		Id:                 model.EventID(model.ProviderPostpress, "acct/cal", "e1"),
		CalendarId:         model.CalendarID(model.ProviderPostpress, "acct", "cal"),
		Provider:           model.ProviderPostpress,
		ProviderEventId:    "e1",
		Title:              title,
		StartTime:          timestamppb.New(t0),
		EndTime:            timestamppb.New(t0.Add(time.Hour)),
		ProviderUpdateTime: timestamppb.New(t0.Add(time.Duration(n) * time.Minute)),
		Deleted:            deleted,
	}
}

// applyAndRead applies ev in its own transaction and returns the changes
// that committed.
func applyAndRead(t *testing.T, st store.Store, ev *calsyncv1.CalendarEvent) []calsyncv1.ChangeType {
	t.Helper()
	ctx := context.Background()
	before, err := st.ChangeBounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		_, err := applyEvent(ctx, tx, ev, model.RawJSON{}, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	recs, err := st.ReadChanges(ctx, before.Head, 100)
	if err != nil {
		t.Fatal(err)
	}
	var types []calsyncv1.ChangeType
	for _, r := range recs {
		types = append(types, r.Type)
	}
	return types
}

const (
	created = calsyncv1.ChangeType_CHANGE_TYPE_CREATED
	updated = calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
	deleted = calsyncv1.ChangeType_CHANGE_TYPE_DELETED
)

func TestApplyEvent(t *testing.T) {
	type step struct {
		ev        *calsyncv1.CalendarEvent
		want      []calsyncv1.ChangeType
		wantTitle string
		wantDel   bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"UnknownUpdateIsCreated", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
		}},
		{"SameVersionTwiceIsNoOp", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(1, "a", false), nil, "a", false},
		}},
		{"UpdateWithoutVisibleChangeIsNoOp", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(2, "a", false), nil, "a", false},
		}},
		{"NewerVersionIsUpdated", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(2, "b", false), []calsyncv1.ChangeType{updated}, "b", false},
		}},
		{"OlderVersionNeverOverwrites", []step{
			{version(2, "b", false), []calsyncv1.ChangeType{created}, "b", false},
			{version(1, "a", false), nil, "b", false},
		}},
		{"DeleteLeavesTombstone", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(2, "a", true), []calsyncv1.ChangeType{deleted}, "a", true},
			{version(2, "a", true), nil, "a", true},
		}},
		{"LateOlderUpdateCannotResurrect", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(3, "a", true), []calsyncv1.ChangeType{deleted}, "a", true},
			{version(2, "b", false), nil, "a", true},
			{version(3, "b", false), nil, "a", true},
		}},
		{"SecondDeleteKeepsTheTombstone", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{idsOnlyDelete(2), []calsyncv1.ChangeType{deleted}, "a", true},
			{idsOnlyDelete(3), nil, "a", true},
		}},
		{"DeleteOfUnknownIsSilentButFinal", []step{
			{version(2, "", true), nil, "", true},
			{version(1, "a", false), nil, "", true},
		}},
		{"StrictlyNewerVersionRestores", []step{
			{version(1, "a", false), []calsyncv1.ChangeType{created}, "a", false},
			{version(2, "a", true), []calsyncv1.ChangeType{deleted}, "a", true},
			{version(3, "c", false), []calsyncv1.ChangeType{created}, "c", false},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := mustOpenStore(t)
			for i, s := range tc.steps {
				got := applyAndRead(t, st, s.ev)
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d: changes %v, want %v", i, got, s.want)
				}
				held, err := st.GetEvent(context.Background(), s.ev.GetId(), false)
				if err != nil {
					t.Fatal(err)
				}
				if held.GetTitle() != s.wantTitle || held.GetDeleted() != s.wantDel {
					t.Fatalf("step %d: held title %q deleted %v, want %q %v", i, held.GetTitle(), held.GetDeleted(), s.wantTitle, s.wantDel)
				}
			}
		})
	}
}

func TestApplyEventUpdatedListsChangedFields(t *testing.T) {
	st := mustOpenStore(t)
	ctx := context.Background()
	applyAndRead(t, st, version(1, "a", false))
	next := version(2, "b", false)
	next.Location = "Room 1"
	applyAndRead(t, st, next)
	b, _ := st.ChangeBounds(ctx)
	recs, err := st.ReadChanges(ctx, b.Head-1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var c calsyncv1.Change
	if err := unmarshalChange(recs[0].Change, &c); err != nil {
		t.Fatal(err)
	}
	if want := []string{"title", "location"}; !slices.Equal(c.GetChangedFields(), want) {
		t.Errorf("changed_fields = %v, want %v", c.GetChangedFields(), want)
	}
	if c.GetPreviousEvent().GetTitle() != "a" || c.GetEvent().GetTitle() != "b" {
		t.Errorf("change = %v", &c)
	}
}

// idsOnlyDelete is a delete that names the event and nothing else, as
// postpress sends it.
func idsOnlyDelete(n int) *calsyncv1.CalendarEvent {
	v := version(n, "", true)
	v.StartTime, v.EndTime = nil, nil
	return v
}

// The store keeps each event's raw provider payload; the change log carries
// the normalized model only, for creates, updates and deletes alike.
func TestChangesCarryNoRawPayload(t *testing.T) {
	st := mustOpenStore(t)
	ctx := context.Background()
	withRaw := func(n int, title string, deleted bool) *calsyncv1.CalendarEvent {
		ev := version(n, title, deleted)
		raw, err := structpb.NewStruct(map[string]any{"summary": title})
		if err != nil {
			t.Fatal(err)
		}
		ev.Raw = raw
		return ev
	}
	for i, ev := range []*calsyncv1.CalendarEvent{
		withRaw(1, "created", false), withRaw(2, "updated", false), withRaw(3, "updated", true),
	} {
		applyAndRead(t, st, ev)
		if ev.GetRaw() == nil {
			t.Fatalf("version %d: applying took the raw payload away from the caller's event", i+1)
		}
		stored, err := st.GetEvent(ctx, ev.GetId(), true)
		if err != nil {
			t.Fatal(err)
		}
		if stored.GetRaw().GetFields()["summary"].GetStringValue() != ev.GetRaw().GetFields()["summary"].GetStringValue() {
			t.Errorf("version %d: stored raw = %v, want %v", i+1, stored.GetRaw(), ev.GetRaw())
		}
	}
	recs, err := st.ReadChanges(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("changes = %d, want created, updated, deleted", len(recs))
	}
	for _, r := range recs {
		var c calsyncv1.Change
		if err := proto.Unmarshal(r.Change, &c); err != nil {
			t.Fatal(err)
		}
		if c.GetEvent().GetRaw() != nil || c.GetPreviousEvent().GetRaw() != nil {
			t.Errorf("%v change carries a raw payload: %v", r.Type, &c)
		}
	}
}

// rawJSONTx records which events were written with a payload kept as
// JSON.
type rawJSONTx struct {
	store.Tx
	asJSON, encoded []string
}

func (tx *rawJSONTx) PutEvent(ctx context.Context, e *calsyncv1.CalendarEvent) error {
	tx.encoded = append(tx.encoded, e.GetTitle())
	return tx.Tx.PutEvent(ctx, e)
}

func (tx *rawJSONTx) PutEventRawJSON(ctx context.Context, e *calsyncv1.CalendarEvent, raw model.RawJSON) error {
	tx.asJSON = append(tx.asJSON, e.GetTitle())
	return tx.Tx.PutEventRawJSON(ctx, e, raw)
}

// applyEvent writes every version of an event whose payload is kept as
// JSON with that JSON, whether it creates the event, updates it, refreshes
// only its payload or leaves a tombstone; the payload reads back as the
// JSON decodes. A version whose payload is decoded is encoded.
func TestApplyEventKeepsThePayloadsJSON(t *testing.T) {
	ctx := context.Background()
	st := mustOpenStore(t)
	for _, c := range []struct {
		ev             *calsyncv1.CalendarEvent
		body           string
		asJSON, encode []string
	}{
		{version(1, "created", false), `{"v":1}`, []string{"created"}, nil},
		{version(2, "updated", false), `{"v":2}`, []string{"updated"}, nil},
		{version(3, "updated", false), `{"v":3, "only":"the payload"}`, []string{"updated"}, nil},
		{version(4, "deleted", true), `{"v":4}`, []string{"deleted"}, nil},
		{version(5, "decoded", false), "", nil, []string{"decoded"}},
	} {
		var raw model.RawJSON
		want := &structpb.Struct{Fields: map[string]*structpb.Value{"decoded": structpb.NewBoolValue(true)}}
		if c.body != "" {
			var err error
			if raw, err = model.CheckRawJSON([]byte(c.body)); err != nil {
				t.Fatal(err)
			}
			if want, err = model.StructFromJSON([]byte(c.body)); err != nil {
				t.Fatal(err)
			}
		} else {
			c.ev.Raw = want
		}
		rec := &rawJSONTx{}
		if err := st.Update(ctx, func(tx store.Tx) error {
			rec.Tx = tx
			_, err := applyEvent(ctx, rec, c.ev, raw, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rec.asJSON, c.asJSON) || !slices.Equal(rec.encoded, c.encode) {
			t.Errorf("%s: written with JSON %q and encoded %q; want %q and %q", c.ev.GetTitle(), rec.asJSON, rec.encoded, c.asJSON, c.encode)
		}
		got, err := st.GetEvent(ctx, c.ev.GetId(), true)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.GetRaw(), want) {
			t.Errorf("%s: payload read back as %v, want %v", c.ev.GetTitle(), got.GetRaw(), want)
		}
	}
}
