"""The CIFAR InceptionV3 that incv3 trains (lib/inceptionv3.c) in PyTorch, with the width multiplier and
the optional auxiliary classifier, for generating conformance fixtures and for
side-by-side benchmarks. State-dict names are those of pytorch-cifar100."""
import math
import struct

import numpy as np
import torch
import torch.nn as nn


def scale(c, w):
    return max(1, int(math.floor(c * w + 0.5)))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, cin, pf, w):
        super().__init__()
        s = lambda c: scale(c, w)
        self.branch1x1 = BasicConv2d(cin, s(64), kernel_size=1)
        self.branch5x5 = nn.Sequential(BasicConv2d(cin, s(48), kernel_size=1),
                                       BasicConv2d(s(48), s(64), kernel_size=5, padding=2))
        self.branch3x3 = nn.Sequential(BasicConv2d(cin, s(64), kernel_size=1),
                                       BasicConv2d(s(64), s(96), kernel_size=3, padding=1),
                                       BasicConv2d(s(96), s(96), kernel_size=3, padding=1))
        self.branchpool = nn.Sequential(nn.AvgPool2d(3, 1, 1),
                                        BasicConv2d(cin, s(pf), kernel_size=3, padding=1))
        self.out = s(64) * 2 + s(96) + s(pf)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3(x),
                          self.branchpool(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        s = lambda c: scale(c, w)
        self.branch3x3 = BasicConv2d(cin, s(384), kernel_size=3, stride=2)
        self.branch3x3stack = nn.Sequential(BasicConv2d(cin, s(64), kernel_size=1),
                                            BasicConv2d(s(64), s(96), kernel_size=3, padding=1),
                                            BasicConv2d(s(96), s(96), kernel_size=3, stride=2))
        self.branchpool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.out = s(384) + s(96) + cin

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3stack(x), self.branchpool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, w):
        super().__init__()
        s = lambda c: scale(c, w)
        c7 = s(c7)
        self.branch1x1 = BasicConv2d(cin, s(192), kernel_size=1)
        self.branch7x7 = nn.Sequential(
            BasicConv2d(cin, c7, kernel_size=1),
            BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(c7, s(192), kernel_size=(1, 7), padding=(0, 3)))
        self.branch7x7stack = nn.Sequential(
            BasicConv2d(cin, c7, kernel_size=1),
            BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(c7, s(192), kernel_size=(1, 7), padding=(0, 3)))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1),
                                         BasicConv2d(cin, s(192), kernel_size=1))
        self.out = 4 * s(192)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7stack(x),
                          self.branch_pool(x)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        s = lambda c: scale(c, w)
        self.branch3x3 = nn.Sequential(BasicConv2d(cin, s(192), kernel_size=1),
                                       BasicConv2d(s(192), s(320), kernel_size=3, stride=2))
        self.branch7x7 = nn.Sequential(
            BasicConv2d(cin, s(192), kernel_size=1),
            BasicConv2d(s(192), s(192), kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(s(192), s(192), kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(s(192), s(192), kernel_size=3, stride=2))
        self.branchpool = nn.AvgPool2d(kernel_size=3, stride=2)
        self.out = s(320) + s(192) + cin

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch7x7(x), self.branchpool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        s = lambda c: scale(c, w)
        self.branch1x1 = BasicConv2d(cin, s(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, s(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(s(384), s(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(s(384), s(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3stack_1 = BasicConv2d(cin, s(448), kernel_size=1)
        self.branch3x3stack_2 = BasicConv2d(s(448), s(384), kernel_size=3, padding=1)
        self.branch3x3stack_3a = BasicConv2d(s(384), s(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3stack_3b = BasicConv2d(s(384), s(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1),
                                         BasicConv2d(cin, s(192), kernel_size=1))
        self.out = s(320) + 4 * s(384) + s(192)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        bs = self.branch3x3stack_2(self.branch3x3stack_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3stack_3a(bs), self.branch3x3stack_3b(bs),
                          self.branch_pool(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, classes, w):
        super().__init__()
        s = lambda c: scale(c, w)
        self.pool = nn.AvgPool2d(5, 3)
        self.conv0 = BasicConv2d(cin, s(128), kernel_size=1)
        self.conv1 = BasicConv2d(s(128), s(768), kernel_size=4)
        self.fc = nn.Linear(s(768), classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv1(self.conv0(self.pool(x))), 1))


class InceptionV3(nn.Module):
    def __init__(self, classes=10, width=1.0, aux=False):
        super().__init__()
        s = lambda c: scale(c, width)
        self.Conv2d_1a_3x3 = BasicConv2d(3, s(32), kernel_size=3, padding=1)
        self.Conv2d_2a_3x3 = BasicConv2d(s(32), s(32), kernel_size=3, padding=1)
        self.Conv2d_2b_3x3 = BasicConv2d(s(32), s(64), kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(s(64), s(80), kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(s(80), s(192), kernel_size=3)
        self.Mixed_5b = InceptionA(s(192), 32, width)
        self.Mixed_5c = InceptionA(self.Mixed_5b.out, 64, width)
        self.Mixed_5d = InceptionA(self.Mixed_5c.out, 64, width)
        self.Mixed_6a = InceptionB(self.Mixed_5d.out, width)
        self.Mixed_6b = InceptionC(self.Mixed_6a.out, 128, width)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out, 160, width)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out, 160, width)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out, 192, width)
        self.AuxLogits = InceptionAux(self.Mixed_6e.out, classes, width) if aux else None
        self.Mixed_7a = InceptionD(self.Mixed_6e.out, width)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out, width)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out, width)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout2d()
        self.linear = nn.Linear(self.Mixed_7c.out, classes)

    def forward(self, x):
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]:
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = self.dropout(self.avgpool(x))
        x = self.linear(x.view(x.size(0), -1))
        return (x, aux) if aux is not None else x


# ---- the incv3 tensor stream (man 5 incv3-stream), uncompressed ----
DTYPES = {np.dtype(np.uint8): 1, np.dtype(np.int32): 2, np.dtype(np.int64): 3,
          np.dtype(np.float32): 4}


def stream_record(name, array):
    a = np.ascontiguousarray(array)
    head = struct.pack("<4sBBBB", b"IV3T", 1, DTYPES[a.dtype], a.ndim, len(name))
    return head + name.encode() + struct.pack("<%dq" % a.ndim, *a.shape) + a.tobytes()


def stream_end():
    return struct.pack("<4sBBBB", b"IV3T", 1, 0, 0, 3) + b"end"
