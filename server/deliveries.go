package server

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// deliveryService lets operators see the inbox and retry dead letters.
type deliveryService struct {
	calsyncv1.UnimplementedDeliveryServiceServer
	store store.Store
	// kick wakes the inbox processor after a retry.
	kick func()
	log  *slog.Logger
}

func (s *deliveryService) ListDeliveries(ctx context.Context, req *calsyncv1.ListDeliveriesRequest) (*calsyncv1.ListDeliveriesResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if p := req.GetProvider(); p != "" && p != model.ProviderRecall && p != model.ProviderPostpress {
		return nil, invalidArgument(`provider must be "recall" or "postpress"`)
	}
	if _, ok := calsyncv1.DeliveryState_name[int32(req.GetState())]; !ok {
		return nil, invalidArgument("state is not a delivery state")
	}
	filter := filterHash("deliveries", req.GetState().String(), req.GetProvider())
	tok, err := decodePageToken(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	ds, err := s.store.ListDeliveries(ctx, store.DeliveryQuery{
		State: req.GetState(), Provider: req.GetProvider(), BeforeID: tok.AfterNum, Limit: limit + 1,
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &calsyncv1.ListDeliveriesResponse{}
	for i, d := range ds {
		if i == limit {
			resp.NextPageToken = encodePageToken(pageToken{Filter: filter, AfterNum: ds[limit-1].ID})
			break
		}
		resp.Deliveries = append(resp.Deliveries, deliveryProto(d))
	}
	return resp, nil
}

func (s *deliveryService) RetryDelivery(ctx context.Context, req *calsyncv1.RetryDeliveryRequest) (*calsyncv1.RetryDeliveryResponse, error) {
	id, err := strconv.ParseInt(req.GetDeliveryId(), 10, 64)
	if err != nil || id <= 0 {
		return nil, invalidArgument("delivery_id must be a delivery's numeric id")
	}
	d, err := s.store.RetryDelivery(ctx, id)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	s.kick()
	return &calsyncv1.RetryDeliveryResponse{Delivery: deliveryProto(d)}, nil
}

// deliveryProto shows a delivery to operators. The body is never included:
// it can hold attendees' details, and the metadata is what triage needs.
func deliveryProto(d store.Delivery) *calsyncv1.Delivery {
	return &calsyncv1.Delivery{
		Id:                strconv.FormatInt(d.ID, 10),
		Provider:          d.Provider,
		ProviderMessageId: d.MessageID,
		EventType:         d.EventType,
		State:             d.State,
		Attempts:          int32(d.Attempts),
		LastError:         d.LastError,
		ReceiveTime:       optionalTimestamp(d.ReceiveTime),
		ProcessTime:       optionalTimestamp(d.ProcessTime),
		NextAttemptTime:   optionalTimestamp(d.NextAttemptTime),
	}
}

func optionalTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
