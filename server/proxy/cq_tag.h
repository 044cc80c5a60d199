// Completion-queue tags.
//
// Every operation Sluice starts on a completion queue carries a CqTag; the
// worker that pulls the tag off its queue calls Proceed(ok) on it, on that
// worker's thread. `ok == false` is a normal event (peer gone, call
// cancelled, alarm cancelled, shutdown), never an assertion.
#ifndef SLUICE_SERVER_PROXY_CQ_TAG_H_
#define SLUICE_SERVER_PROXY_CQ_TAG_H_

namespace sluice {

class CqTag {
 public:
  virtual ~CqTag() = default;
  virtual void Proceed(bool ok) = 0;
};

// A tag that forwards to a member function of its owner. The owner holds it
// by value and must outlive every operation started with it.
template <typename Owner>
class MemberTag final : public CqTag {
 public:
  using Handler = void (Owner::*)(bool);
  MemberTag(Owner* owner, Handler handler) : owner_(owner), handler_(handler) {}
  void Proceed(bool ok) override { (owner_->*handler_)(ok); }

 private:
  Owner* owner_;
  Handler handler_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_CQ_TAG_H_
