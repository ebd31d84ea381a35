// TensorRT plugin (IPluginV3, TensorRT 10 API) of the fused decode op muse_fast::NucleiDecode, so that an engine
// built from `muse-fast export --fused-post` outputs nuclei. It runs the CUDA kernels of cuda.cu (the logic of
// muse_post.h, tested against the PyTorch references through libmuse_native_cuda.so).
//
// Inputs (float32, linear): heat [B, H, W] (centre probabilities), offsets [B, 2, H, W] (dx, dy in cells),
// fmap [B, D, H, W]. Outputs, K = max_points: xy [B, K, 2] float32, scores [B, K] float32, counts [B] int32,
// overflow [B] int32, feats [B, K, D] float32; rows past counts are zeros. Attributes (ONNX node attributes, also
// what is serialized): threshold (float), min_distance, max_points, exclude_border, stride, input_h, input_w (int).
//
// The ONNX parser finds the creator by op type "NucleiDecode", plugin_version "1" and namespace "" once the library
// is loaded (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins): it exports the two entry points of a
// TensorRT 10 plugin library, setLoggerFinder and getCreators.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "muse_native.h"

using namespace nvinfer1;

namespace {

constexpr char const* kName = "NucleiDecode";
constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "";
constexpr int32_t kInputs = 3;
constexpr int32_t kOutputs = 5;

struct Params {
    float threshold = 0.3f;
    int32_t min_distance = 1;
    int32_t max_points = 1024;
    int32_t exclude_border = 0;
    int32_t stride = 4;
    int32_t input_h = 224;
    int32_t input_w = 224;
};

// One scalar attribute, whatever numeric type the parser wrote it in.
bool scalar(PluginField const& f, double& value) {
    if (f.data == nullptr || f.length < 1) return false;
    switch (f.type) {
        case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(f.data); return true;
        case PluginFieldType::kINT64: value = static_cast<double>(*static_cast<int64_t const*>(f.data)); return true;
        case PluginFieldType::kFLOAT32: value = *static_cast<float const*>(f.data); return true;
        case PluginFieldType::kFLOAT64: value = *static_cast<double const*>(f.data); return true;
        default: return false;
    }
}

Params parse(PluginFieldCollection const* fc) {
    Params p;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        double v = 0.0;
        if (f.name == nullptr || !scalar(f, v)) continue;
        std::string const n(f.name);
        if (n == "threshold") p.threshold = static_cast<float>(v);
        if (n == "min_distance") p.min_distance = static_cast<int32_t>(v);
        if (n == "max_points") p.max_points = static_cast<int32_t>(v);
        if (n == "exclude_border") p.exclude_border = static_cast<int32_t>(v);
        if (n == "stride") p.stride = static_cast<int32_t>(v);
        if (n == "input_h") p.input_h = static_cast<int32_t>(v);
        if (n == "input_w") p.input_w = static_cast<int32_t>(v);
    }
    return p;
}

// The attribute list: typed entries pointing at ``p`` (serialization), or at nothing (the creator's field names).
std::vector<PluginField> fields(Params* p) {
    auto at = [p](auto member) -> void const* { return p ? static_cast<void const*>(&(p->*member)) : nullptr; };
    return {
        PluginField("threshold", at(&Params::threshold), PluginFieldType::kFLOAT32, 1),
        PluginField("min_distance", at(&Params::min_distance), PluginFieldType::kINT32, 1),
        PluginField("max_points", at(&Params::max_points), PluginFieldType::kINT32, 1),
        PluginField("exclude_border", at(&Params::exclude_border), PluginFieldType::kINT32, 1),
        PluginField("stride", at(&Params::stride), PluginFieldType::kINT32, 1),
        PluginField("input_h", at(&Params::input_h), PluginFieldType::kINT32, 1),
        PluginField("input_w", at(&Params::input_w), PluginFieldType::kINT32, 1),
    };
}

class NucleiDecodePlugin final : public IPluginV3,
                                 public IPluginV3OneCore,
                                 public IPluginV3OneBuild,
                                 public IPluginV3OneRuntime {
public:
    explicit NucleiDecodePlugin(Params p) : p_(p), fields_(fields(&p_)) {
        fc_.nbFields = static_cast<int32_t>(fields_.size());
        fc_.fields = fields_.data();
    }
    NucleiDecodePlugin(NucleiDecodePlugin const&) = delete;  // fields_ points into this object: clone() instead
    NucleiDecodePlugin& operator=(NucleiDecodePlugin const&) = delete;

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override {
        try {
            return new NucleiDecodePlugin(p_);
        } catch (...) {
            return nullptr;
        }
    }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        return nbInputs == kInputs && nbOutputs == kOutputs ? 0 : 1;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*,
                               int32_t nbInputs) const noexcept override {
        if (nbInputs != kInputs || nbOutputs != kOutputs) return 1;
        DataType const types[kOutputs] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32, DataType::kINT32,
                                          DataType::kFLOAT};
        for (int32_t i = 0; i < kOutputs; ++i) outputTypes[i] = types[i];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
                            int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[0].nbDims != 3 || inputs[2].nbDims != 4) return 1;
        IDimensionExpr const* batch = inputs[0].d[0];
        IDimensionExpr const* rows = exprBuilder.constant(p_.max_points);
        outputs[0].nbDims = 3;  // xy
        outputs[0].d[0] = batch;
        outputs[0].d[1] = rows;
        outputs[0].d[2] = exprBuilder.constant(2);
        outputs[1].nbDims = 2;  // scores
        outputs[1].d[0] = batch;
        outputs[1].d[1] = rows;
        for (int32_t i : {2, 3}) {  // counts, overflow
            outputs[i].nbDims = 1;
            outputs[i].d[0] = batch;
        }
        outputs[4].nbDims = 3;  // feats
        outputs[4].d[0] = batch;
        outputs[4].d[1] = rows;
        outputs[4].d[2] = inputs[2].d[1];
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t,
                                   int32_t) noexcept override {
        PluginTensorDesc const& desc = inOut[pos].desc;
        bool const integer = pos == kInputs + 2 || pos == kInputs + 3;  // counts, overflow
        return desc.format == TensorFormat::kLINEAR && desc.type == (integer ? DataType::kINT32 : DataType::kFLOAT);
    }

    int32_t getNbOutputs() const noexcept override { return kOutputs; }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t, DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        Dims const& most = inputs[0].max;  // heat [B, H, W] at the profile's largest shape
        return muse_decode_cuda_workspace(most.d[0], most.d[1], most.d[2], p_.max_points);
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override {
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        Dims const& heat = inputDesc[0].dims;
        Dims const& offsets = inputDesc[1].dims;
        Dims const& fmap = inputDesc[2].dims;
        if (offsets.d[1] != 2 || offsets.d[2] != heat.d[1] || offsets.d[3] != heat.d[2] || fmap.d[2] != heat.d[1] ||
            fmap.d[3] != heat.d[2]) {
            return 1;  // the maps must share one H x W
        }
        return muse_decode_cuda(static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]),
                                static_cast<float const*>(inputs[2]), heat.d[0], fmap.d[1], heat.d[1], heat.d[2],
                                p_.threshold, p_.min_distance, p_.exclude_border, p_.max_points,
                                static_cast<float>(p_.stride), static_cast<float>(p_.input_h),
                                static_cast<float>(p_.input_w), static_cast<float*>(outputs[0]),
                                static_cast<float*>(outputs[1]), static_cast<int32_t*>(outputs[2]),
                                static_cast<int32_t*>(outputs[3]), static_cast<float*>(outputs[4]), workspace,
                                stream);
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &fc_; }

private:
    Params p_;
    std::vector<PluginField> fields_;
    PluginFieldCollection fc_{};
};

class NucleiDecodeCreator final : public IPluginCreatorV3One {
public:
    NucleiDecodeCreator() : fields_(fields(nullptr)) {
        fc_.nbFields = static_cast<int32_t>(fields_.size());
        fc_.fields = fields_.data();
    }

    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &fc_; }

    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
        try {
            return new NucleiDecodePlugin(parse(fc));
        } catch (...) {
            return nullptr;
        }
    }

private:
    std::vector<PluginField> fields_;
    PluginFieldCollection fc_{};
};

}  // namespace

extern "C" void setLoggerFinder(ILoggerFinder*) {}

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static NucleiDecodeCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
